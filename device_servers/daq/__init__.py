"""DAQ run control for GET electronics: ECC servers, data routers, the run sequencer."""
