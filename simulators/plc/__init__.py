"""Simulator of the observatory's weather and site PLC (the seed's JSON protocol).

Modules: ``server`` (TCP server and command line), ``plc`` (state, cycle
and protocol), ``sensors`` (the devices, declared like datasheets),
``weather`` (the site conditions the sensors read), ``scenario`` (scenario
files; their format is documented there), ``scenarios/`` (shipped files).

Framing
    TCP, port 5003 by default (the seed's ``socket_config.ini``). One
    request per line: a JSON object ending in a newline; one reply line per
    request: a JSON list ending in a newline. Blank lines are ignored. The
    connection stays open for further requests, also after an error.

Request
    ``{"command": [<command>, ...]}``, each command an object with a
    ``name`` (case-insensitive) and its arguments. The reply list holds one
    object per command, in order; commands in one request run together,
    with no PLC cycle in between.

STATUS reply (the seed's sample format)
    ``[{"name": "STATUS", "from": "Beckhoff", "version_firmware": "20170809",
    "site": "OSM-Mexico", "date": "2025-01-01T03:04:05", "device": [...]}]``;
    ``date`` is the PLC's UTC clock when it answers (no zone, as in the
    sample). Each device is ``{"name", "type", "serial_number", "valid":
    "yes"|"no", "values": [{"name", "value", "unit", "comment",
    "timestamp"}]}``; ``timestamp`` (our addition: the seed asks that each
    sensor give its time stamp) is the UTC time of the PLC cycle that read
    the value, ``YYYY-MM-DDTHH:MM:SS.mmm``. Devices, in order: WXT520,
    DRD11, VantagePro, MLX90614-1, LAMP_FLAT_CAGIRE as in the sample;
    LAMP_FLAT_DDRAGO where the sample repeats the CAGIRE lamp; then our
    additions MLX90614-2 (second cloud sensor), ``PLC`` (type ``plc``: Mode
    OFF/MANU/AUTO, Bypass, NightAck, Intrusion, EmergencyStop; booleans as
    0/1 with unit ``bool`` like the sample's DRD11 ``digital``) and ``UPS``
    (type ``power``: Status ok/on_battery/low_battery).

Other replies
    Success: ``{"name": <COMMAND>, "result": "OK", ...}`` echoing what was
    applied. Refusal: ``{"name": "ERROR", "command": <name or null>,
    "message": "..."}``; malformed JSON or a badly shaped request gives a
    one-element list with such an object (``command`` null).

Commands
    ``STATUS``; ``INJECT`` {device, value_name, value} pins a value
    (``value: null`` releases it; device ``weather`` pins a site quantity
    that every sensor then reads: temperature, humidity, pressure,
    wind_speed, wind_direction, cloud_cover, rain_rate, inside_temperature,
    inside_humidity; DRD11 also takes ``rain`` 1/0); ``SET_VALID`` {device,
    valid: "yes"|"no"}; ``FREEZE`` {device, frozen} (values and timestamps
    stop updating: a stale sensor); ``SET_MODE`` {value}; ``SET_BYPASS``
    {value}; ``ACK_NIGHT`` [{value}]; ``EMERGENCY_STOP`` [{value}];
    ``INTRUSION`` [{value}]; ``UPS`` {value}; ``PLAY`` {scenario, [loop]};
    ``STOP_SCENARIO``; ``SCENARIO``; ``HELP``. State changes show in STATUS
    from the next PLC cycle (``--tick`` seconds at most).
"""
