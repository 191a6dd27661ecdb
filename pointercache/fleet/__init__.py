"""Tools that look across pods: the fleet view and two-phase promotion."""
