# Runs one libFuzzer target for SECONDS on a fresh copy of its seeds (cmake -P): the
# source corpus is never written to, and crash files land in WORK/artifacts/.
foreach(v FUZZER SEEDS CORPUS WORK SECONDS)
    if(NOT DEFINED ${v})
        message(FATAL_ERROR "run_fuzz.cmake: -D${v}= is required")
    endif()
endforeach()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus ${WORK}/artifacts)
file(GLOB seeds ${SEEDS}/* ${CORPUS}/*)
list(LENGTH seeds n)
if(n EQUAL 0)
    message(FATAL_ERROR "run_fuzz.cmake: no seeds in ${SEEDS} or ${CORPUS}")
endif()
file(COPY ${seeds} DESTINATION ${WORK}/corpus)

execute_process(COMMAND ${FUZZER} -max_total_time=${SECONDS} -timeout=10
        -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
        -artifact_prefix=${WORK}/artifacts/ ${WORK}/corpus
    RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
    file(GLOB found ${WORK}/artifacts/*)
    message(FATAL_ERROR "fuzzer failed (${rc}); inputs that broke it: ${found}\n"
        "copy one into ${CORPUS}/ to keep it as a regression seed")
endif()
