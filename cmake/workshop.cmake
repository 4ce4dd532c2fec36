# The workshop (scripts/workshop): exercises derived from stages.
#
#   add_exercise(<name> STAGE <stage> PROPERTY "<in words>" EXPECT <regex>
#                CHECK <test-target> FILTER "<Catch2 test name>" ... [LIBS ...] [SOURCES ...])
#   add_exercise(<name> STAGE <variant>/<file>.yaml PROPERTY "<in words>" EXPECT <regex>
#                VALIDATE <rule>)
#
# An exercise is stored as exercises/<name>.patch against its stage (the
# reference solution) and exercises/<name>.hint.md. From them:
#   - the unsolved program, stage + patch, is generated and built here (the
#     build fails when the patch no longer applies: change the stage and its
#     exercise together, see docs/workshop.md);
#   - "workshop: <name>: unsolved fails ..." (default suite) runs the
#     property test(s) FILTER against it and passes only when they fail with
#     output matching EXPECT, the reason the exercise exists;
#   - "workshop: <name>: solution <stage> passes ..." runs the same tests
#     against the stage;
#   - "exercise: <name>" (label "exercise", left out of the presets' suites)
#     runs them against the participant's copy, exercises/<name>.cpp (created
#     from the patch by scripts/workshop on first use, ignored by git), built
#     by the target workshop_<name>, which is not part of "all".
# The runner reads ${CMAKE_BINARY_DIR}/workshop/<name>.meta.
#
# Exercises need no sanitizer: in an instrumented build (asan, tsan) they are
# left out, so CI checks them once, in the default preset.

find_program(PATCH_EXECUTABLE patch REQUIRED)
set(GS_WORKSHOP_SCRIPT "${CMAKE_SOURCE_DIR}/scripts/workshop")

function(add_exercise name)
  if(CMAKE_CXX_FLAGS MATCHES "-fsanitize")
    return()
  endif()
  cmake_parse_arguments(ARG "" "STAGE;PROPERTY;EXPECT;CHECK;VALIDATE" "FILTER;LIBS;SOURCES" ${ARGN})
  get_filename_component(chapter "${CMAKE_CURRENT_SOURCE_DIR}" NAME)
  set(src "${CMAKE_CURRENT_SOURCE_DIR}")
  set(patchfile "${src}/exercises/${name}.patch")
  set(out "${CMAKE_CURRENT_BINARY_DIR}/exercises")
  if(ARG_VALIDATE)
    set(kind manifest)
    set(ext yaml)
    set(solution "${src}/manifests/${ARG_STAGE}")
    get_filename_component(variant "${ARG_STAGE}" DIRECTORY)
  else()
    set(kind program)
    set(ext cpp)
    set(solution "${src}/${ARG_STAGE}.cpp")
  endif()
  set(unsolved "${out}/${name}.${ext}")
  set(mine "${src}/exercises/${name}.${ext}")
  add_custom_command(
    OUTPUT "${unsolved}"
    COMMAND "${CMAKE_COMMAND}" -E make_directory "${out}"
    COMMAND "${GS_WORKSHOP_SCRIPT}" _apply "${solution}" "${patchfile}" "${unsolved}"
    DEPENDS "${solution}" "${patchfile}" "${GS_WORKSHOP_SCRIPT}"
    COMMENT "workshop: ${name} = ${ARG_STAGE} + exercises/${name}.patch"
    VERBATIM)
  # The participant's copy is created by scripts/workshop before it builds
  # workshop_<name>; it is no output of the build, so a clean never removes it.
  set_source_files_properties("${mine}" PROPERTIES GENERATED TRUE)
  set(meta_target "")
  if(kind STREQUAL program)
    add_executable(${chapter}_ex_${name} "${unsolved}" ${ARG_SOURCES})
    set_target_properties(${chapter}_ex_${name} PROPERTIES OUTPUT_NAME ${name} RUNTIME_OUTPUT_DIRECTORY "${out}")
    add_executable(workshop_${name} EXCLUDE_FROM_ALL "${mine}" ${ARG_SOURCES})
    set_target_properties(workshop_${name} PROPERTIES OUTPUT_NAME ${name} RUNTIME_OUTPUT_DIRECTORY "${out}/yours")
    foreach(t ${chapter}_ex_${name} workshop_${name})
      target_include_directories(${t} PRIVATE "${src}")
      target_link_libraries(${t} PRIVATE Threads::Threads ${ARG_LIBS})
    endforeach()
    add_dependencies(workshop_${name} ${ARG_CHECK})
    set(checker "$<TARGET_FILE:${ARG_CHECK}>")
    set(unsolved_run "$<TARGET_FILE:${chapter}_ex_${name}>")
    set(mine_run "$<TARGET_FILE:workshop_${name}>")
    set(solution_run "${CMAKE_CURRENT_BINARY_DIR}/${ARG_STAGE}")
    set(meta_target workshop_${name})
  else()
    add_custom_target(${chapter}_ex_${name} ALL DEPENDS "${unsolved}")
    add_custom_target(workshop_${name})
    add_dependencies(workshop_${name} 05-k8s_validate)
    set(checker "$<TARGET_FILE:05-k8s_validate>")
    set(unsolved_run "${unsolved}")
    set(mine_run "${mine}")
    set(solution_run "${solution}")
    set(meta_target workshop_${name})
  endif()
  list(JOIN ARG_FILTER "\n" filters)
  string(REPLACE "\n" "\nfilter=" filters "filter=${filters}")
  file(GENERATE OUTPUT "${CMAKE_BINARY_DIR}/workshop/${name}.meta" CONTENT
"name=${name}
kind=${kind}
chapter=${chapter}
stage=${ARG_STAGE}
variant=${variant}
rule=${ARG_VALIDATE}
property=${ARG_PROPERTY}
expect=${ARG_EXPECT}
checker=${checker}
chapter_dir=${src}
solution=${solution}
solution_run=${solution_run}
unsolved=${unsolved}
unsolved_run=${unsolved_run}
file=${mine}
run=${mine_run}
target=${meta_target}
patch=${patchfile}
hint=${src}/exercises/${name}.hint.md
${filters}
")
  set(meta "${CMAKE_BINARY_DIR}/workshop/${name}.meta")
  add_test(NAME "workshop: ${name}: unsolved fails '${ARG_PROPERTY}'"
    COMMAND "${GS_WORKSHOP_SCRIPT}" _check "${meta}" unsolved)
  add_test(NAME "workshop: ${name}: solution ${ARG_STAGE} passes '${ARG_PROPERTY}'"
    COMMAND "${GS_WORKSHOP_SCRIPT}" _check "${meta}" solution)
  set_tests_properties(
    "workshop: ${name}: unsolved fails '${ARG_PROPERTY}'"
    "workshop: ${name}: solution ${ARG_STAGE} passes '${ARG_PROPERTY}'"
    PROPERTIES LABELS "${chapter};workshop" TIMEOUT 300)
  add_test(NAME "exercise: ${name}" COMMAND "${GS_WORKSHOP_SCRIPT}" _check "${meta}" mine)
  set_tests_properties("exercise: ${name}" PROPERTIES LABELS "exercise" TIMEOUT 300)
endfunction()
