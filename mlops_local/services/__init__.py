"""One module per service process: find its binary, render its config, run it in the foreground."""
