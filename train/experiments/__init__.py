"""Research scripts whose figures the README quotes (not part of the app)."""
