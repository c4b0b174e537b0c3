"""GitOps: compare a project with a git ref or a directory (`syncline plan`), promote pins
between environments (`syncline promote`) and compare a running server with the project
(`syncline status`). Sits beside the CLI: it uses the loader and compiler, never the runtime."""
