"""Usage records, pricing, the sqlite store and reports."""
