#!/usr/bin/env python3
"""End-to-end client for the house-price GraphQL API, written with `gql`.

What it does, in order (each step is a function below):

1. connects over HTTP with ``fetch_schema_from_transport=True``: gql introspects the server
   once, and from then on every document is validated against the *server's* schema before
   it is sent (a typo in a field name fails here, not in production);
2. subscribes to ``predictionLogged(status: OK)`` over WebSocket (graphql-transport-ws);
3. prices one house with ``predictPrice``;
4. waits (at most 10 s) until the subscription delivers the event of that prediction;
5. pages through ``predictions`` (cursor pagination, up to 3 pages) and checks that the
   priced id is there;
6. records the true sale price with ``recordOutcome`` (needs an API key with scope
   ``outcomes``, sent as the ``x-api-key`` header).

Configuration is by environment variable::

    GRAPHQL_URL  http://127.0.0.1:8000/graphql   (HTTP endpoint)
    WS_URL       ws://127.0.0.1:8000/ws          (subscriptions endpoint)
    API_KEY      the plain API key (only needed for step 6)

The last line of stdout is always one JSON object: ``{"ok": true, ...}`` (exit 0) or
``{"ok": false, "error": "..."}`` (exit 1), so scripts and CI can parse the outcome. Progress
messages go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any, AsyncIterator, Dict, List, Optional

from gql import Client, GraphQLRequest, gql
from gql.client import SyncClientSession
from gql.transport.exceptions import TransportError, TransportQueryError, TransportServerError
from gql.transport.requests import RequestsHTTPTransport
from gql.transport.websockets import WebsocketsTransport
from graphql import GraphQLError

# --- The documents ------------------------------------------------------------------------
# Parsed once at import time (a syntax error fails immediately). They are validated against
# the fetched schema by gql on every execute/subscribe.

PREDICTION_LOGGED = gql(
    """
    subscription PredictionLogged {
      predictionLogged(status: OK) {
        id
        price
        model { name version }
      }
    }
    """
)

PREDICT_PRICE = gql(
    """
    query PredictPrice($input: HouseInput!) {
      predictPrice(input: $input) {
        id
        price
        requestId
        model { name version }
      }
    }
    """
)

PREDICTION_HISTORY = gql(
    """
    query PredictionHistory($first: Int!, $after: String) {
      predictions(first: $first, after: $after) {
        edges {
          cursor
          node { id createdAt status price }
        }
        pageInfo { hasNextPage endCursor }
      }
    }
    """
)

RECORD_OUTCOME = gql(
    """
    mutation RecordOutcome($id: ID!, $price: Float!) {
      recordOutcome(predictionId: $id, actualPrice: $price) {
        predictionId
        actualPrice
        revision
        change
      }
    }
    """
)

HOUSE = {"squareFeet": 1500, "bedrooms": 3, "bathrooms": 2}
ACTUAL_PRICE = 187500.0
PAGE_SIZE = 2
MAX_PAGES = 3
EVENT_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10
# graphql-transport-ws has no "subscribed" acknowledgement: the server registers the
# subscription when it starts executing the `subscribe` message. Give it a moment before
# producing the event we want to see, or a fast server could publish it first.
SUBSCRIBE_SETTLE_S = 0.3


class ExampleError(Exception):
    """A failure with a message fit for the final JSON line."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ExampleError(f"environment variable {name} is not set")
    return value


def describe_graphql_errors(errors: Optional[List[Any]]) -> str:
    """`CODE: message (field)` for each error of a GraphQL `errors` array.

    The server puts a machine-readable code in `extensions.code` (BAD_USER_INPUT,
    UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, ...): that, not the message, is what a client
    should branch on.
    """
    parts = []
    for error in errors or []:
        if not isinstance(error, dict):
            parts.append(str(error))
            continue
        extensions = error.get("extensions") or {}
        code = extensions.get("code", "NO_CODE")
        text = f"{code}: {error.get('message', '')}"
        if extensions.get("field"):
            text += f" (field {extensions['field']})"
        parts.append(text)
    return "; ".join(parts) or "unknown GraphQL error"


def with_vars(document: GraphQLRequest, **variables: Any) -> GraphQLRequest:
    # gql 4: variables travel inside the request object, next to the parsed document.
    return GraphQLRequest(document, variable_values=variables)


def execute(session: SyncClientSession, what: str, request: GraphQLRequest, **kwargs: Any) -> Dict[str, Any]:
    """Runs one query/mutation and turns every failure into an ExampleError naming the step."""
    try:
        return session.execute(request, **kwargs)
    except TransportQueryError as e:
        # The server answered with an `errors` array.
        raise ExampleError(f"{what}: {describe_graphql_errors(e.errors)}") from e
    except GraphQLError as e:
        # Local validation against the fetched schema failed: the document does not match
        # what the server offers (the request was never sent).
        raise ExampleError(f"{what}: document invalid against the server schema: {e.message}") from e
    except TransportServerError as e:
        raise ExampleError(f"{what}: HTTP {e.code}: {e}") from e
    except TransportError as e:
        raise ExampleError(f"{what}: {type(e).__name__}: {e}") from e


async def collect_events(events: AsyncIterator[Dict[str, Any]], seen: Dict[str, Dict[str, Any]], arrived: asyncio.Event) -> None:
    """Stores every pushed prediction by id.

    The event may arrive *before* the HTTP answer of predictPrice (the server pushes it as
    soon as the log row commits), so we keep everything instead of looking for one id.
    """
    async for result in events:
        record = result["predictionLogged"]
        seen[record["id"]] = record
        arrived.set()


def raise_if_ended(task: "asyncio.Task[None]") -> None:
    """A subscription task that stopped before we cancelled it failed: say why."""
    if not task.done():
        return
    exc = task.exception()
    if isinstance(exc, TransportQueryError):
        # e.g. the server rejected the subscription document
        raise ExampleError(f"subscription: {describe_graphql_errors(exc.errors)}")
    if exc is not None:
        raise ExampleError(f"subscription failed: {type(exc).__name__}: {exc}")
    raise ExampleError("subscription: the server completed the stream")


async def wait_for_event(
    task: "asyncio.Task[None]", seen: Dict[str, Dict[str, Any]], arrived: asyncio.Event, prediction_id: str
) -> Dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + EVENT_TIMEOUT_S
    while prediction_id not in seen:
        raise_if_ended(task)
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise ExampleError(f"subscription: no event for prediction {prediction_id} within {EVENT_TIMEOUT_S:.0f} s")
        arrived.clear()
        try:
            await asyncio.wait_for(arrived.wait(), timeout=min(remaining, 0.5))
        except asyncio.TimeoutError:
            pass
    return seen[prediction_id]


async def run() -> Dict[str, Any]:
    graphql_url = env("GRAPHQL_URL")
    ws_url = env("WS_URL")
    api_key = env("API_KEY")

    # Ask for the GraphQL-over-HTTP media type first: the server then also reports request
    # errors with a 4xx status. gql reads the JSON body whatever the status or content type.
    accept = {"Accept": "application/graphql-response+json, application/json;q=0.9"}

    # --- 1. schema by introspection ----------------------------------------------------------
    http_client = Client(
        transport=RequestsHTTPTransport(url=graphql_url, headers=accept, timeout=HTTP_TIMEOUT_S),
        fetch_schema_from_transport=True,
    )
    try:
        # Connecting runs the introspection query.
        session = http_client.connect_sync()
    except TransportQueryError as e:
        raise ExampleError(f"introspection: {describe_graphql_errors(e.errors)}") from e
    except TransportError as e:
        raise ExampleError(f"introspection: {type(e).__name__}: {e}") from e
    try:
        schema = http_client.schema
        if schema is None:
            raise ExampleError("introspection: no schema fetched")
        schema_types = len(schema.type_map)
        log(f"schema: {schema_types} types fetched from {graphql_url}")

        # --- 2. subscription ---------------------------------------------------------------
        # Reuse the fetched schema, so the subscription is validated too, without a second
        # introspection over the socket.
        ws_client = Client(
            transport=WebsocketsTransport(
                url=ws_url,
                subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
                connect_timeout=HTTP_TIMEOUT_S,
            ),
            schema=schema,
        )
        try:
            ws_session = await ws_client.connect_async()
        except Exception as e:  # connection refused, handshake rejected, no ack...
            raise ExampleError(f"subscription: cannot connect to {ws_url}: {type(e).__name__}: {e}") from e
        seen: Dict[str, Dict[str, Any]] = {}
        arrived = asyncio.Event()
        events_task = asyncio.create_task(collect_events(ws_session.subscribe(PREDICTION_LOGGED), seen, arrived))
        try:
            await asyncio.sleep(SUBSCRIBE_SETTLE_S)
            raise_if_ended(events_task)
            log("subscription: listening for predictionLogged(status: OK)")

            # --- 3. price a house -----------------------------------------------------------
            # The HTTP calls are blocking (requests); run them in a thread so the event loop
            # keeps reading the WebSocket meanwhile.
            data = await asyncio.to_thread(execute, session, "predictPrice", with_vars(PREDICT_PRICE, input=HOUSE))
            prediction = data["predictPrice"]
            prediction_id = prediction["id"]
            model = prediction["model"]
            log(f"predictPrice: ${prediction['price']:,.0f} by {model['name']}@{model['version']} (id {prediction_id})")

            # --- 4. the pushed event --------------------------------------------------------
            event = await wait_for_event(events_task, seen, arrived, prediction_id)
            log(f"subscription: got the event for {prediction_id} (price {event['price']:,.0f})")
        finally:
            events_task.cancel()
            try:
                await events_task
            except BaseException:
                pass
            await ws_client.close_async()

        # --- 5. history, cursor pagination ----------------------------------------------------
        history_ids: List[str] = []
        after: Optional[str] = None
        pages = 0
        while pages < MAX_PAGES:
            page = await asyncio.to_thread(
                execute, session, "predictions", with_vars(PREDICTION_HISTORY, first=PAGE_SIZE, after=after)
            )
            connection = page["predictions"]
            pages += 1
            history_ids.extend(edge["node"]["id"] for edge in connection["edges"])
            if not connection["pageInfo"]["hasNextPage"]:
                break
            # The cursor is opaque: pass endCursor back as `after`, never build one.
            after = connection["pageInfo"]["endCursor"]
        log(f"predictions: {len(history_ids)} rows over {pages} page(s)")
        if prediction_id not in history_ids:
            raise ExampleError(f"predictions: priced id {prediction_id} not in the first {pages} page(s)")

        # --- 6. record the outcome ------------------------------------------------------------
        # Only mutations need the key, so it is sent on this request alone (requests merges
        # nothing: these headers replace the transport's for this call).
        outcome = (
            await asyncio.to_thread(
                execute,
                session,
                "recordOutcome",
                with_vars(RECORD_OUTCOME, id=prediction_id, price=ACTUAL_PRICE),
                extra_args={"headers": {**accept, "x-api-key": api_key}},
            )
        )["recordOutcome"]
        log(f"recordOutcome: {outcome['change']} (revision {outcome['revision']})")
    finally:
        http_client.close_sync()

    return {
        "ok": True,
        "schemaTypes": schema_types,
        "price": prediction["price"],
        "predictionId": prediction_id,
        "subscriptionEvent": True,
        "historyPages": pages,
        "historyIds": len(history_ids),
        "outcome": outcome["change"],
    }


def main() -> int:
    try:
        summary = asyncio.run(run())
    except ExampleError as e:
        print(json.dumps({"ok": False, "error": str(e)}, separators=(",", ":")), flush=True)
        return 1
    except Exception as e:  # anything unexpected still ends with the JSON contract line
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}, separators=(",", ":")), flush=True)
        return 1
    print(json.dumps(summary, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
