# Workshop exercises of chapter 05 (cmake/workshop.cmake, docs/workshop.md):
# manifests, checked by the chapter's validator (k8s-validate).
add_exercise(05a-grace-budget STAGE 030-drain/app.yaml VALIDATE grace-budget
  PROPERTY "bounded: the grace period covers preStop + shutdown timeout + margin"
  EXPECT "✗ grace-budget")
add_exercise(05b-prestop-sleep STAGE 040-native-sleep/app.yaml VALIDATE prestop
  PROPERTY "no errors to clients: a preStop sleep while the endpoint is removed"
  EXPECT "✗ prestop")
add_exercise(05c-readiness-probe STAGE 040-native-sleep/app.yaml VALIDATE readiness-probe
  PROPERTY "stops taking traffic first: the Service follows /readyz"
  EXPECT "✗ readiness-probe")
