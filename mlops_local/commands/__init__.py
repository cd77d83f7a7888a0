"""One module per `mlops-local` subcommand: each exposes `register(subparsers)`."""
