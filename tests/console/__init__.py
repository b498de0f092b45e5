"""The operator console, one test module per console module: pure rules directly, pages
over HTTP and in a headless browser against a listener on loopback."""
