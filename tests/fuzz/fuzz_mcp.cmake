# aos-tool's MCP client (included from CMakeLists.txt): the JSON-RPC line decoder, the line
# splitter and a whole session fed the bytes as its server's stdout.
aos_fuzz(mcp SRC fuzz_mcp.c CORPUS mcp SECONDS ${AOS_FUZZ_SERVER_SECONDS}
    CODE ${PROJECT_SOURCE_DIR}/servers/tool/mcp.c ${PROJECT_SOURCE_DIR}/libaos/src/log.c
    INCLUDE ${PROJECT_SOURCE_DIR}/servers/tool
    LIBS PkgConfig::JANSSON Threads::Threads REPLAY aos_tool_mcp)
