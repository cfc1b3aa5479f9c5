"""What the platform tells people about a partition: reports (and, as they arrive, rules, clusters, explanations)."""
