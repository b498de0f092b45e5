"""Code that runs on a platform's side and reports to the listener (Metaflow's exit hook)."""
