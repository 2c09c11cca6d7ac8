"""`make bench`: the gateway's overhead measured against direct calls to the fake upstream (and LiteLLM)."""
