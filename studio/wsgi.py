import os

from django.core.wsgi import get_wsgi_application

from studio.home import keep_private

keep_private()  # before Django creates anything under STUDIO_HOME
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
application = get_wsgi_application()
