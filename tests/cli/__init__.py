"""The `listener` command, one test module per command module: each command family run
as a real process, and in-process (CliRunner) for the finer cases."""
