"""DCS: a Python control system on Tango Controls for experiments and observatories."""

from setuptools import find_packages, setup

setup(
    name="dcs",
    version="0.1.0",
    description="Tango-based control system: detector DAQ run control, robotic observatory, detector control",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.14",
    packages=find_packages(include=["device_servers*", "clients*", "db*", "gui*", "simulators*"]),
    include_package_data=True,
    package_data={
        "device_servers.daq": ["*.wsdl"],
        "db.app.migrations": ["script.py.mako"],
        "simulators.plc": ["scenarios/*.yaml", "scenarios/*.json"],
    },
    install_requires=[
        "pytango>=10.0,<11",
        "pyyaml>=6.0,<7",
        "numpy>=1.26,<3",
        "sqlalchemy>=2.0,<3",
        "rich>=13,<15",
        "pydantic>=2.6,<3",
        "zeep>=4.2,<5",
        "lxml>=4.9,<7",
        "paramiko>=3.4,<6",
        "alembic>=1.13,<2",
        "setproctitle>=1.3,<2",
        "requests>=2.31,<3",
        "astropy>=6.1,<9",
    ],
    extras_require={
        "postgresql": ["psycopg[binary]>=3.1,<4"],
        # lxml: taurus.qt.qtgui.panel needs it and Taurus does not declare it.
        "gui": ["taurus>=5.2,<6", "pyqt5>=5.15,<5.16", "lxml>=4.9,<7", "itango>=0.3,<1"],
        "test": [
            "pytest>=8,<10",
            "pytest-timeout>=2.2,<3",
            "pytest-xdist>=3.5,<4",
            "taurus>=5.2,<6",
            "pyqt5>=5.15,<5.16",
            "lxml>=4.9,<7",
            "psycopg[binary]>=3.1,<4",
            "alpyca>=3.1,<4",
            "ruff>=0.5",
        ],
    },
    entry_points={
        "console_scripts": [
            "dcs=clients.cli:main",
            "dcs-supervisor=clients.supervisor:main",
            "TextDevice=device_servers.control.text_device:main",
            "EccServer=device_servers.daq.ecc_server:main",
            "DataRouter=device_servers.daq.data_router:main",
            "DaqSequencer=device_servers.daq.daq_sequencer:main",
            "Plc=device_servers.observatory.plc:main",
            "Weather=device_servers.observatory.weather:main",
            "Mount=device_servers.observatory.mount:main",
            "Dome=device_servers.observatory.dome:main",
            "FilterWheel=device_servers.observatory.filter_wheel:main",
            "Camera=device_servers.observatory.camera:main",
            "ObservatoryConductor=device_servers.observatory.conductor:main",
            "dcs-sim-hv=simulators.hv.server:main",
            "dcs-sim-ecc=simulators.ecc.server:main",
            "dcs-sim-datarouter=simulators.datarouter.server:main",
            "dcs-sim-plc=simulators.plc.server:main",
            "dcs-sim-alpaca=simulators.alpaca.server:main",
            "dcs-sim-datalogger=simulators.tools.datalogger:main",
        ]
    },
)
