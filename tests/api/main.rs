//! API tests: the real server on 127.0.0.1:0, a fresh PostgreSQL database per test.
//! One binary (faster to link than one per file); set TEST_LOG=1 to see the service's logs.

mod bounds;
mod cluster;
mod common;
mod deploy;
mod durability;
mod faults;
mod history;
mod inference;
mod limits;
mod models;
mod monitoring;
mod openapi;
mod ops;
mod partitions;
mod predict;
mod registry;
mod replicas;
mod rest;
mod rollups;
mod schema;
mod security;
mod spool_upgrade;
mod subscription;
mod traces;
mod trust;
mod web;
