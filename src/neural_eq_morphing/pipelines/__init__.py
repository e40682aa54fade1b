"""The project's pipelines, discovered by ``find_pipelines``."""
