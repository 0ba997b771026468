"""The official MCP Python SDK as the lake's MCP client (lake/tests/mcp.rs).

Usage: client.py URL TOKEN < calls.json

Reads a JSON list of [tool, arguments] pairs on stdin, then through one streamable-HTTP
session with `Authorization: Bearer TOKEN`: initializes, lists the tools, calls each pair
in order, ends the session, and tries to initialize once more with a wrong token. Prints
one JSON object: the negotiated protocol and server, the tools with their input schemas,
each call's outcome ({"isError", "text"} or {"error"} for a JSON-RPC error), and what the
wrong token got. Exit code 3: the SDK is not installed.
"""

import json
import sys

try:
    import anyio
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client
    from mcp.shared.exceptions import McpError
except ImportError as e:  # pragma: no cover - the Rust test explains how to install it
    print(f"the MCP Python SDK is missing: {e}", file=sys.stderr)
    sys.exit(3)


def flatten(e: BaseException) -> list[BaseException]:
    """The leaves of an exception group (anyio task groups wrap what fails inside)."""
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in flatten(sub)]
    return [e]


async def main(url: str, token: str, calls: list) -> dict:
    out: dict = {"calls": []}
    headers = {"Authorization": f"Bearer {token}"}
    with anyio.fail_after(60):
        async with streamablehttp_client(url, headers=headers) as (read, write, session_id):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                out["protocol"] = init.protocolVersion
                out["server"] = init.serverInfo.name
                out["instructions"] = init.instructions
                out["session"] = bool(session_id())
                listed = await session.list_tools()
                out["tools"] = {t.name: t.inputSchema for t in listed.tools}
                out["ping"] = (await session.send_ping()) is not None
                for tool, args in calls:
                    try:
                        r = await session.call_tool(tool, args)
                        text = "".join(c.text for c in r.content if c.type == "text")
                        out["calls"].append({"isError": r.isError, "text": text})
                    except McpError as e:
                        out["calls"].append({"error": e.error.message, "code": e.error.code})

    # A wrong token: the SDK's initialize fails on the 401.
    try:
        with anyio.fail_after(30):
            async with streamablehttp_client(url, headers={"Authorization": "Bearer wrong"}) as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
        out["wrong_token"] = "accepted"
    except BaseException as e:  # noqa: BLE001 - what the SDK raised is the result
        leaves = flatten(e)
        statuses = [leaf.response.status_code for leaf in leaves if isinstance(leaf, httpx.HTTPStatusError)]
        out["wrong_token"] = statuses[0] if statuses else "; ".join(repr(leaf) for leaf in leaves)
    return out


if __name__ == "__main__":
    result = anyio.run(main, sys.argv[1], sys.argv[2], json.load(sys.stdin))
    print(json.dumps(result))
