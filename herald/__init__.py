"""Herald: CRM core and customer-messaging engine for B2C utilities and telecom operators."""

__version__ = "0.1.0"
