"""triggers: automated_service_triggers evaluated on the scored stream (issue #5)."""
