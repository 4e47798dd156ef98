#!/usr/bin/env bash
# The main job: the ChatQnA pipeline (scripts/chatqna.sh; flags go to the chatqna megaservice).
exec bash "$(dirname "$0")/../chatqna.sh" "$@"
