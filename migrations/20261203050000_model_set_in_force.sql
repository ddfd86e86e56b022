-- The model set in force across replicas: the set most recently loaded by any replica (at its
-- start or by a reload). Every replica compares what it serves with it and, when it changes,
-- rescans its own MODEL_DIR; a replica that cannot serve the same set says why (readiness,
-- model_events 'diverged').
create table model_set_in_force (
    singleton     boolean primary key default true check (singleton),
    revision      bigint not null,
    models        jsonb not null,
    default_model text not null,
    shadow_model  text,
    changed_at    timestamptz not null default now(),
    changed_by    text not null,
    trigger       text not null
);
comment on table model_set_in_force is 'One row: the model set every replica should serve (the one most recently loaded by any replica).';
comment on column model_set_in_force.singleton is 'Always true: the table has one row.';
comment on column model_set_in_force.revision is 'Bumped at every change; replicas compare it with the revision they serve.';
comment on column model_set_in_force.models is 'Array of {"id": "name@version", "sha256": artifact digest}.';
comment on column model_set_in_force.default_model is 'name@version answering by default.';
comment on column model_set_in_force.shadow_model is 'name@version of the shadow model, if any.';
comment on column model_set_in_force.changed_at is 'When the set was recorded.';
comment on column model_set_in_force.changed_by is 'Replica that loaded it (host:port).';
comment on column model_set_in_force.trigger is 'startup, sighup or api.';

alter table model_events add column replica text;
alter table model_events add column revision bigint;
comment on column model_events.replica is 'Replica the event happened in (host:port); null for events before replicas were named.';
comment on column model_events.revision is 'Revision of model_set_in_force the event made (loaded, reloaded) or followed (replica reloads, diverged).';
alter table model_events drop constraint model_events_event_check;
alter table model_events add constraint model_events_event_check
    check (event in ('loaded', 'reloaded', 'reload_failed', 'diverged'));
alter table model_events drop constraint model_events_trigger_check;
alter table model_events add constraint model_events_trigger_check
    check (trigger in ('startup', 'sighup', 'api', 'replica'));
comment on column model_events.event is 'loaded (startup), reloaded, reload_failed, or diverged (this replica cannot serve the set in force; error says why).';
comment on column model_events.trigger is 'startup, sighup, api (the reloadModels mutation), or replica (the set in force changed elsewhere).';
