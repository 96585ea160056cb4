"""Storage: images (inspection, copies, overlays), shared base images, and the roots paths must stay in."""
