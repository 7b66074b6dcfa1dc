"""The MCP gateway: upstream MCP servers behind one governed `/mcp` endpoint, and Code Mode.

Kept free of imports so that reading the config (sidecar.mcp.settings) does not load the
MCP SDK.
"""
