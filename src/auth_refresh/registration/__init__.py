"""A refresh registration: ``AuthRefreshModule`` (``module``) with its providers (``container``)
and options (``options``), how it joins and starts with its application (``application``), its
startup checks (``checks``), its routes (``routes``) and their OpenAPI (``openapi``)."""
