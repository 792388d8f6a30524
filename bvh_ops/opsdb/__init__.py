"""The ops database (schema ``ops``): where it runs (database) and its versioned schema
(migrations). Below monitoring and drill, which both keep their rows here; imports only the shared
core and pg."""
