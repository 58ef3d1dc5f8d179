"""Map the top-level preset folders into the package.

Users edit `models/` and `accelerators/` at the top of the repository. The
wheel carries them as the packages `hwsim._models` and `hwsim._accelerators`,
so a non-editable install finds the same presets.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["hwsim", "hwsim.*"]) + ["hwsim._models", "hwsim._accelerators"],
    package_dir={"hwsim._models": "models", "hwsim._accelerators": "accelerators"},
    package_data={
        "hwsim": ["data/*/*"],
        "hwsim._models": ["*.json", "*.md"],
        "hwsim._accelerators": ["*.yaml", "*.md"],
    },
)
