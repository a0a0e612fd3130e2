#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    from studio.home import keep_private

    keep_private()  # before Django creates anything under STUDIO_HOME
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
