"""The `Store` interface, one abstract class per concern; `engine.store.base.Store` composes them.

Each backend (engine/store/sqlite/, engine/store/postgres/) implements every concern in a mixin
of its own, so no class carries the whole interface."""
