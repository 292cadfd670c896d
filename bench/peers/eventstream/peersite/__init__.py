"""A minimal Django project serving django-eventstream, the peer in bench/sidebyside.py."""
