#!/usr/bin/env python3
"""A TCP proxy between the service and PostgreSQL for the chaos benchmark.

    bench/linkproxy.py LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT

SIGUSR1 cuts the link (closes every connection, refuses new ones), SIGUSR2 restores it.
Benchmark-only tooling: the tests have their own proxy (tests/api/faults.rs)."""
import asyncio
import signal
import sys

listen_port, upstream_host, upstream_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
state = {"up": True, "conns": set()}


async def pump(reader, writer):
    try:
        while state["up"]:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    if not state["up"]:
        client_writer.close()
        return
    try:
        server_reader, server_writer = await asyncio.open_connection(upstream_host, upstream_port)
    except OSError:
        client_writer.close()
        return
    tasks = {asyncio.ensure_future(pump(client_reader, server_writer)),
             asyncio.ensure_future(pump(server_reader, client_writer))}
    state["conns"].add((client_writer, server_writer, frozenset(tasks)))
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:
        t.cancel()
    client_writer.close()
    server_writer.close()


def cut():
    state["up"] = False
    for client_writer, server_writer, tasks in list(state["conns"]):
        for t in tasks:
            t.cancel()
        client_writer.close()
        server_writer.close()
    state["conns"].clear()


def restore():
    state["up"] = True


async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, cut)
    loop.add_signal_handler(signal.SIGUSR2, restore)
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


asyncio.run(main())
