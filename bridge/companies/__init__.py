"""Companies as data: the admin API's companies and keys, usage and cost, balances, limits."""
