#!/usr/bin/env python3
"""Where a request's server CPU goes: inclusive µs per request of each part, side by side.

    bench/profile.py NAME=STACKS:US_PER_REQUEST ...

STACKS is `perf script -F ip,sym` output of a `perf record --call-graph fp` run (bench/profile.sh
makes them); US_PER_REQUEST is the server's CPU per request over that run, from /proc. A part's
cost is the share of samples with one of its frames anywhere on the stack, times that figure, so a
part includes everything it calls (the table's indentation says what contains what).
"""

import sys

# (label, substrings of a frame's symbol; a sample counts if any frame contains any of them).
# The floor (bench/floor.rs) has no log, no model and no REST layers: its rows for those are 0.
PARTS = [
    ("all of the server's CPU", [""]),
    ("kernel: syscalls (TCP send and receive, epoll, futex)", ["do_syscall_64"]),
    ("one connection's task (hyper, axum, the handler)", ["handle_connection"]),
    ("  request id and tracing layers", ["SetRequestId<", "PropagateRequestId<"]),
    ("  the handler", ["axum::handler::Handler<"]),
    ("    body -> GraphQL request", ["http::graphql::parse_post", "async_graphql_axum::extract::GraphQLBatchRequest"]),
    ("    parse (the cached document's copy)", ["NextParseQuery::run"]),
    ("    validation (check_rules)", ["async_graphql::validation::check_rules"]),
    ("    execution", ["NextExecute::run"]),
    ("      input value -> HouseInput", ["param_value"]),
    ("      AppState::predict", ["AppState::predict"]),
    ("        scoring", ["LoadedModel::score"]),
    ("        the log row", ["service::new_record"]),
    ("        hand-off to the writer", ["LogWriter::submit"]),
    ("      the answer (Prediction fields)", ["OutputType for house_price_api::service::Prediction"]),
    ("    response -> JSON body", ["http::graphql::respond", "async_graphql_axum::response::GraphQLResponse"]),
    ("log writer task (encode, send, wake)", ["log::writer::Task::run"]),
    ("  binding the batch's 29 arrays", ["log::record::bind_inserted"]),
    ("  waking the committed requests", ["log::writer::Task::committed"]),
    ("memory copies (moves of large futures)", ["__memmove"]),
    ("allocator (mimalloc)", ["mi_malloc", "_mi_", "mi_free", "mi_theap"]),
]


def stacks(path):
    """Yields each sample's frames (symbols), leaf first."""
    frames = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                if frames:
                    yield frames
                frames = []
                continue
            parts = line.split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else "")
    if frames:
        yield frames


def shares(path):
    counts = [0] * len(PARTS)
    total = 0
    for frames in stacks(path):
        total += 1
        for i, (_, needles) in enumerate(PARTS):
            if any(n in frame for frame in frames for n in needles):
                counts[i] += 1
    return [c / max(total, 1) for c in counts], total


def main():
    columns = []
    for arg in sys.argv[1:]:
        name, rest = arg.split("=", 1)
        path, us = rest.rsplit(":", 1)
        share, samples = shares(path)
        columns.append((name, [s * float(us) for s in share], samples))
    width = max(len(label) for label, _ in PARTS)
    print(f"{'µs per request':<{width}} " + " ".join(f"{name:>16}" for name, _, _ in columns))
    for i, (label, _) in enumerate(PARTS):
        print(f"{label:<{width}} " + " ".join(f"{us[i]:>16.2f}" for _, us, _ in columns))
    print(f"{'(samples)':<{width}} " + " ".join(f"{n:>16}" for _, _, n in columns))


if __name__ == "__main__":
    main()
