# aos-tool's MCP client (included from CMakeLists.txt): the library, the fake MCP server
# the tests drive it with, and the tests (fake server; real reference servers via npm).
add_library(aos_tool_mcp STATIC ${CMAKE_CURRENT_LIST_DIR}/mcp.c)
target_include_directories(aos_tool_mcp PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(aos_tool_mcp PUBLIC aos_static PkgConfig::JANSSON Threads::Threads
    PRIVATE aos_flags)

# A test-only MCP server whose misbehaviour is picked by argv (see mcp_fake.c).
add_executable(mcp_fake ${CMAKE_CURRENT_LIST_DIR}/mcp_fake.c)
target_link_libraries(mcp_fake PRIVATE PkgConfig::JANSSON aos_flags)

if(AOS_TESTS)
    add_executable(test_tool_mcp ${CMAKE_CURRENT_LIST_DIR}/mcp_test.c)
    target_link_libraries(test_tool_mcp PRIVATE aos_tool_mcp PkgConfig::CMOCKA aos_flags)
    add_test(NAME unit_tool_mcp COMMAND test_tool_mcp $<TARGET_FILE:mcp_fake>)
    set_tests_properties(unit_tool_mcp PROPERTIES LABELS unit TIMEOUT 300)

    # The reference servers from npm, unsandboxed: skipped (77) when npm is unreachable.
    add_executable(test_tool_mcp_real ${CMAKE_CURRENT_LIST_DIR}/mcp_real_test.c)
    target_link_libraries(test_tool_mcp_real PRIVATE aos_tool_mcp aos_flags)
    add_test(NAME unit_tool_mcp_real COMMAND test_tool_mcp_real
        ${PROJECT_SOURCE_DIR}/tools/mcp-servers.sh ${CMAKE_BINARY_DIR}/npm)
    set_tests_properties(unit_tool_mcp_real PROPERTIES LABELS unit TIMEOUT 600
        SKIP_RETURN_CODE 77)
endif()
