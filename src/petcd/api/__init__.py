"""The client-facing API: gRPC services (library-independent handlers), front ends, HTTP."""
