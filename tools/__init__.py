"""Tools for a source checkout, not part of the package users import: the demo's process
supervision (shared with the integration tests) and the Docker checks."""
