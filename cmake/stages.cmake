# Helpers that keep a chapter's CMakeLists.txt to a few lines.
#
#   add_stage(010-naive-exit [SOURCES extra.cpp ...] [LIBS lib ...])
#       One stage = one self-contained program built from <name>.cpp.
#       The binary is named like the source file so that readers and
#       tests refer to the same name (target: <chapter>_<name>).
#
#   add_chapter_tests(<target> SOURCES t1.cpp ... [LIBS ...])
#       A Catch2 test program linked with the test kit. Tests are
#       discovered one by one and labelled with the chapter's directory
#       name, so `ctest -L 01-signals` runs one chapter.
#       CHAPTER_BIN_DIR points at the chapter's build directory.
#
#   add_chapter_tour(SOURCES tour.cpp ... [LIBS ...])
#       The chapter's contribution to scripts/tour (a scoreboard), built as
#       <chapter>-tour, which scripts/tour runs in chapter order.
#
#   add_chapter_timelines(SOURCES timeline.cpp ... [LIBS ...]
#                         CHECK a.svg EXPECTATION... [b.svg EXPECTATION...])
#       The chapter's timeline generator, built as <chapter>-timelines
#       (binary: timelines; `timelines --out-dir DIR` draws DIR/*.svg from
#       real runs; scripts/update-docs writes them to <chapter>/img/), and
#       the test "<chapter>: timelines", which runs it into the build tree
#       and checks each picture's series with timeline-check (exit 77:
#       skipped). The test is not registered in sanitizer builds.


function(_gs_chapter_label out)
  get_filename_component(label "${CMAKE_CURRENT_SOURCE_DIR}" NAME)
  set(${out} "${label}" PARENT_SCOPE)
endfunction()

function(add_stage name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  _gs_chapter_label(label)
  # Stage names repeat across chapters (every chapter has a 010); the target
  # is qualified by the chapter, the binary keeps the plain name.
  set(target "${label}_${name}")
  add_executable(${target} ${name}.cpp ${ARG_SOURCES})
  set_target_properties(${target} PROPERTIES OUTPUT_NAME ${name})
  target_link_libraries(${target} PRIVATE Threads::Threads ${ARG_LIBS})
  set_property(DIRECTORY APPEND PROPERTY GS_STAGES ${target})
endfunction()

function(_gs_common_harness target)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${target} ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE testkit ${ARG_LIBS})
  target_compile_definitions(${target} PRIVATE
    CHAPTER_BIN_DIR="${CMAKE_CURRENT_BINARY_DIR}"
    CHAPTER_SOURCE_DIR="${CMAKE_CURRENT_SOURCE_DIR}")
  get_property(stages DIRECTORY PROPERTY GS_STAGES)
  if(stages)
    add_dependencies(${target} ${stages})
  endif()
endfunction()

function(add_chapter_tests target)
  _gs_common_harness(${target} ${ARGN})
  target_link_libraries(${target} PRIVATE Catch2::Catch2WithMain)
  _gs_chapter_label(label)
  catch_discover_tests(${target}
    TEST_PREFIX "${label}: "
    PROPERTIES LABELS "${label}" TIMEOUT 300 SKIP_REGULAR_EXPRESSION "SKIPPED:")
endfunction()

function(add_chapter_tour)
  _gs_chapter_label(label)
  _gs_common_harness(${label}-tour ${ARGN})
endfunction()

# add_grpc_proto_library(<target> PROTO_DIR <dir> PROTOS name ...)
#     A static library of the C++ code that Debian's protoc and
#     grpc_cpp_plugin generate from <dir>/<name>.proto, with its include
#     directory. Chapter 03 builds its own protocol with it; chapter 05
#     builds its callers from chapter 03's .proto files (the public
#     interface), never from chapter 03's build.
function(add_grpc_proto_library target)
  cmake_parse_arguments(ARG "" "PROTO_DIR" "PROTOS" ${ARGN})
  set(gen_dir "${CMAKE_CURRENT_BINARY_DIR}/gen")
  set(gen_files)
  set(sources)
  foreach(proto IN LISTS ARG_PROTOS)
    list(APPEND gen_files "${gen_dir}/${proto}.pb.cc" "${gen_dir}/${proto}.pb.h"
                          "${gen_dir}/${proto}.grpc.pb.cc" "${gen_dir}/${proto}.grpc.pb.h")
    list(APPEND sources "${ARG_PROTO_DIR}/${proto}.proto")
  endforeach()
  list(JOIN ARG_PROTOS ".proto " names)
  _gs_chapter_label(label)
  add_custom_command(
    OUTPUT ${gen_files}
    COMMAND "${CMAKE_COMMAND}" -E make_directory "${gen_dir}"
    COMMAND protobuf::protoc "--proto_path=${ARG_PROTO_DIR}" "--cpp_out=${gen_dir}" "--grpc_out=${gen_dir}"
            "--plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin>" ${sources}
    DEPENDS ${sources} protobuf::protoc gRPC::grpc_cpp_plugin
    COMMENT "protoc (${label}): ${names}.proto"
    VERBATIM)
  add_library(${target} STATIC ${gen_files})
  target_include_directories(${target} SYSTEM PUBLIC "${gen_dir}")
  target_link_libraries(${target} PUBLIC gRPC::grpc++ protobuf::libprotobuf)
  # Generated code is not ours to fix: its warnings are not errors here.
  target_compile_options(${target} PRIVATE -Wno-error -Wno-pedantic -Wno-unused-parameter)
endfunction()

function(add_chapter_timelines)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS;CHECK" ${ARGN})
  _gs_chapter_label(label)
  _gs_common_harness(${label}-timelines SOURCES ${ARG_SOURCES} LIBS ${ARG_LIBS})
  set_target_properties(${label}-timelines PROPERTIES OUTPUT_NAME timelines)
  # Like the docs check, the test runs in the unsanitized build only: the
  # pictures are documentation drawn from that build, and the properties they
  # show are tested by each chapter's own tests under every preset.
  if(CMAKE_CXX_FLAGS MATCHES "-fsanitize")
    return()
  endif()
  set(dir "${CMAKE_CURRENT_BINARY_DIR}/timelines-test")
  set(script "set -e; rm -rf '${dir}'; '$<TARGET_FILE:${label}-timelines>' --out-dir '${dir}'")
  foreach(word ${ARG_CHECK})
    if(word MATCHES "[.]svg$")
      string(APPEND script "; '$<TARGET_FILE:timeline-check>' '${dir}/${word}'")
    else()
      string(APPEND script " '${word}'")
    endif()
  endforeach()
  add_test(NAME "${label}: timelines" COMMAND bash -c "${script}")
  set_tests_properties("${label}: timelines" PROPERTIES LABELS "${label};timelines" TIMEOUT 300 SKIP_RETURN_CODE 77)
endfunction()

# The README's table of neighbour diffs must say what `diff -u A B | wc -l`
# says for every pair of neighbouring stages (testkit/tools/diff_table_check).
#   add_chapter_diff_table([DIR subdir FILES f...] [COMPARE B=A...])
# DIR and FILES: the stages are DIR's subdirectories, compared file by file.
# COMPARE: stage B is measured against stage A, not against its predecessor.
function(add_chapter_diff_table)
  cmake_parse_arguments(ARG "" "DIR" "FILES;COMPARE" ${ARGN})
  _gs_chapter_label(label)
  set(dir "${CMAKE_CURRENT_SOURCE_DIR}")
  if(ARG_DIR)
    set(dir "${dir}/${ARG_DIR}")
  endif()
  set(args "${CMAKE_CURRENT_SOURCE_DIR}/README.md" "${dir}")
  if(ARG_FILES)
    list(APPEND args --dirs ${ARG_FILES})
  endif()
  foreach(pair ${ARG_COMPARE})
    list(APPEND args --compare ${pair})
  endforeach()
  set(name "${label}: README: the neighbour-diff table matches diff -u | wc -l")
  add_test(NAME "${name}" COMMAND diff-table-check ${args})
  set_tests_properties("${name}" PROPERTIES LABELS "${label}" TIMEOUT 60)
endfunction()
