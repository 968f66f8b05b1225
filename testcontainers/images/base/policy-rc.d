#!/bin/sh
# Containers have no init: never start services from package scripts.
exit 101
