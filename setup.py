from glob import glob

from setuptools import find_packages, setup

package_name = "vpr_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "bench"]),
    package_data={"vpr_ros.models": ["weights/*.pt"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="vpr_ros maintainers",
    maintainer_email="vpr_ros@example.org",
    description="Onboard visual place recognition for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "localize = vpr_ros.ros.entry:main",
            "vpr-ros = vpr_ros.cli:main",
        ],
    },
)
