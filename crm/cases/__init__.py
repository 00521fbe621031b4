"""Cases (appeals): intake from every channel, identification, classification, lifecycle."""
