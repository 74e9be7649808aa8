"""The gateway data plane: per-tenant kernel objects, VNI binding, translator workers."""
