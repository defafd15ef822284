"""Local tooling (CLI, Azurite, generator, local host): never shipped (.funcignore)."""
