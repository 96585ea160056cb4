# salt://virt/python.sls -- the Python libraries salt-virt needs (libvirt-python, pycdlib,
# cryptography), installed into the Python that runs Salt, then a module refresh: the minion's
# virt.* works at once, without a restart. virt/map.jinja tells onedir, system and pip Pythons
# apart; pillar virt:hypervisor:python overrides it (kind, bin_env, pip_pkgs, pip_options such
# as find_links/no_index/index_url, build_pkgs, system_pkgs). See docs/install.rst.
{%- from "virt/map.jinja" import hyper with context %}
{%- set py = hyper.python %}
{%- if py.kind == 'system' %}

salt-virt-python-libs:
  pkg.installed:
    - pkgs: {{ py.system_pkgs | json }}
    - reload_modules: True
{%- else %}

# libvirt-python has no wheels: pip builds it, which needs a compiler, pkg-config and the
# libvirt (and, outside onedir, Python) development headers.
salt-virt-python-build-deps:
  pkg.installed:
    - pkgs: {{ py.build_pkgs | json }}

salt-virt-python-libs:
  pip.installed:
    - pkgs: {{ py.pip_pkgs | json }}
{%- if py.bin_env %}
    - bin_env: {{ py.bin_env | json }}
{%- endif %}
{%- for key, value in py.pip_options | dictsort %}
    - {{ key }}: {{ value | json }}
{%- endfor %}
    - reload_modules: True
    - require:
      - pkg: salt-virt-python-build-deps
{%- endif %}
