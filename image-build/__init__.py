"""The appliance image recipe (recipe.toml) and overlay/ as data: this folder is the package
cjb.image_build (pyproject.toml maps it), so a wheel carries it. No code lives here."""
