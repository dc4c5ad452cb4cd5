"""A deterministic cluster simulator for the pure planner (:mod:`hub.planner`).

Many copies of the planner run in virtual time, each inside a small model of the coordinator's
shell (:mod:`tests.sim.node`), over a modelled network (:mod:`tests.sim.network`) and a
modelled failure detector (:mod:`tests.sim.membership`). :mod:`tests.sim.cluster` runs faults
and user requests; :mod:`tests.sim.invariants` checks exactness; :mod:`tests.sim.schedules`
draws seeded random schedules and shrinks failing ones.
"""
