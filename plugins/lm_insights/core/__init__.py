"""The bottom of the house: small modules every room shares (what a partition is and its staging names, the result
cache's key, how values read as text, shared SQL expressions). They import no room (steps, learn, explain, guard),
so those rooms can use them without reaching into one another."""
