"""Why the model said so: rules, clusters, search by meaning, word-level explanations, what changed, reports."""
