"""``turnout``: the operator's command line. It talks to the gateway's HTTP API only (it imports
no service), so it works against any gateway it can reach."""
