"""
Outputter for the progress events of the ``virt`` runner: one plain line per step.

.. code-block:: text

    virt: Creating VM centos1 on hypervisor hypervisor2
"""

__virtualname__ = "virt_progress"


def __virtual__():
    return __virtualname__


def output(data, **kwargs):  # pylint: disable=unused-argument
    """Print ``virt: <message>`` for a progress event, or the data as-is otherwise."""
    event = data.get("event", data) if isinstance(data, dict) else {}
    if isinstance(event, dict) and "message" in event:
        return f"virt: {event['message']}"
    return str(data)
