# The one place where dependencies are looked up. All of them come from
# Debian 12 packages installed by scripts/install-deps.

find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)

# cpp-httplib: Debian ships a *compiled* library whose ABI depends on the
# macros in its .pc file. Including the header without those flags gives
# mismatched definitions and a double free at run time, so pkg-config is the
# only supported way in.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)

# hiredis 0.14
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)

# gRPC C++ 1.51 and Protobuf 3.21
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)

# The same, as static archives (libgrpc-dev, libprotobuf-dev, libabsl-dev):
# GRPCPP_STATIC_STATIC_LIBRARIES lists every archive in link order. One
# binary uses it (03's 070-quick-exit-static); grpc++_unsecure is enough for
# plaintext and leaves OpenSSL out.
pkg_check_modules(GRPCPP_STATIC REQUIRED grpc++_unsecure protobuf)

# yaml-cpp 0.7 (05-k8s reads its manifests)
find_package(yaml-cpp REQUIRED)

# Catch2 v2 (2.13): Catch2::Catch2WithMain, catch_discover_tests()
find_package(Catch2 2 REQUIRED)
include(Catch)

# Programs that tests, tours and scenarios drive.
find_program(REDIS_SERVER_EXECUTABLE redis-server PATHS /usr/bin /usr/sbin REQUIRED)
find_program(UNSHARE_EXECUTABLE unshare PATHS /usr/bin REQUIRED)
find_program(TINI_EXECUTABLE tini PATHS /usr/bin)
find_program(DUMB_INIT_EXECUTABLE dumb-init PATHS /usr/bin)
find_program(HAPROXY_EXECUTABLE haproxy PATHS /usr/sbin /usr/bin REQUIRED)
