# What `cmake --install` puts where, beyond the targets' own install() rules: systemd
# files, documentation, the CMake package and the pkg-config file. Every destination is
# relative to CMAKE_INSTALL_PREFIX, so `--prefix` and DESTDIR staging (and CPack) work.
#
# Components: `runtime` (qbusd, qbusctl, libqbus.so.0, systemd files, docs) and `devel`
# (headers, libqbus.so, libqbus.a, CMake package, qbus.pc).
include(CMakePackageConfigHelpers)

# systemd.pc names absolute directories; re-root them at a marker prefix and keep the part
# below it, so `/lib/systemd/system` becomes `lib/systemd/system` under our own prefix.
function(qbus_systemd_dir out variable default)
  set(dir "${default}")
  if(PKG_CONFIG_FOUND)
    execute_process(
      COMMAND ${PKG_CONFIG_EXECUTABLE} --define-variable=prefix=/QBUS_PREFIX
              --define-variable=root_prefix=/QBUS_PREFIX --define-variable=rootprefix=/QBUS_PREFIX
              --variable=${variable} systemd
      OUTPUT_VARIABLE value
      OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE rc
      ERROR_QUIET)
    if(rc EQUAL 0 AND value MATCHES "^/QBUS_PREFIX/+(.+)$")
      set(dir "${CMAKE_MATCH_1}")
    endif()
  endif()
  set(${out} "${dir}" PARENT_SCOPE)
endfunction()

qbus_systemd_dir(default_unitdir systemdsystemunitdir lib/systemd/system)
qbus_systemd_dir(default_sysusersdir sysusersdir lib/sysusers.d)
qbus_systemd_dir(default_tmpfilesdir tmpfilesdir lib/tmpfiles.d)
set(QBUS_SYSTEMD_UNITDIR "${default_unitdir}" CACHE STRING
    "systemd system unit directory (relative to the install prefix, or absolute)")
set(QBUS_SYSUSERSDIR "${default_sysusersdir}" CACHE STRING
    "sysusers.d directory (relative to the install prefix, or absolute)")
set(QBUS_TMPFILESDIR "${default_tmpfilesdir}" CACHE STRING
    "tmpfiles.d directory (relative to the install prefix, or absolute)")
# Below the library directory, which GNUInstallDirs re-derives when the prefix changes;
# -D either one to override.
if(NOT DEFINED QBUS_CMAKE_PACKAGE_DIR)
  set(QBUS_CMAKE_PACKAGE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/qbus")
endif()
if(NOT DEFINED QBUS_PKGCONFIG_DIR)
  set(QBUS_PKGCONFIG_DIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
endif()

# --- systemd: whatever units, sysusers.d and tmpfiles.d files systemd/ holds. The globs
# are re-checked at build time, so files added later are picked up without a manual
# re-configure. A `*.in` unit is configured first (@CMAKE_INSTALL_FULL_SBINDIR@ and such).
set(systemd_src ${PROJECT_SOURCE_DIR}/systemd)
file(GLOB qbus_units CONFIGURE_DEPENDS ${systemd_src}/*.service ${systemd_src}/*.socket)
file(GLOB qbus_unit_templates CONFIGURE_DEPENDS ${systemd_src}/*.service.in
     ${systemd_src}/*.socket.in)
foreach(template IN LISTS qbus_unit_templates)
  get_filename_component(name "${template}" NAME)
  string(REGEX REPLACE "\\.in$" "" name "${name}")
  configure_file(${template} ${PROJECT_BINARY_DIR}/systemd/${name} @ONLY)
  list(APPEND qbus_units ${PROJECT_BINARY_DIR}/systemd/${name})
endforeach()
if(qbus_units)
  install(FILES ${qbus_units} DESTINATION ${QBUS_SYSTEMD_UNITDIR} COMPONENT runtime)
endif()

# Installs the one file matching `patterns` as `dir`/qbus.conf (sysusers.d and tmpfiles.d
# name their files after the package).
function(qbus_install_as_qbus_conf what dir)
  file(GLOB candidates CONFIGURE_DEPENDS ${ARGN})
  list(FILTER candidates EXCLUDE REGEX "(~|\\.in|\\.md|\\.orig|\\.rej)$")
  list(LENGTH candidates count)
  if(count EQUAL 0)
    return()
  endif()
  list(GET candidates 0 file)
  if(count GREATER 1)
    message(WARNING "qbus: several ${what} files in systemd/ (${candidates}); installing ${file}")
  endif()
  install(FILES ${file} DESTINATION ${dir} RENAME qbus.conf COMPONENT runtime)
endfunction()
qbus_install_as_qbus_conf(sysusers.d ${QBUS_SYSUSERSDIR} ${systemd_src}/*sysusers*
                          ${systemd_src}/sysusers.d/*.conf)
qbus_install_as_qbus_conf(tmpfiles.d ${QBUS_TMPFILESDIR} ${systemd_src}/*tmpfiles*
                          ${systemd_src}/tmpfiles.d/*.conf)

# --- Documentation. The example config is documentation: nothing goes to /etc, the
# daemon runs on built-in defaults until an operator writes /etc/qbus/qbusd.json.
install(FILES ${PROJECT_SOURCE_DIR}/config/qbusd.example.json
              ${PROJECT_SOURCE_DIR}/config/bridge.example.json ${PROJECT_SOURCE_DIR}/docs/bridge.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT runtime)
install(FILES ${PROJECT_SOURCE_DIR}/config/README.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME config.md COMPONENT runtime)
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR}
        COMPONENT runtime)

# --- The Python package (python/qbus, pure Python over libqbus.so.0 with ctypes), where
# Debian's python3 finds packages of the distribution: the .deb ships it with libqbus, so
# `import qbus` works once the package is installed; `pip install ./python` is the other
# way.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/python/qbus DESTINATION lib/python3/dist-packages
        COMPONENT runtime FILES_MATCHING PATTERN "*.py" PATTERN "__pycache__" EXCLUDE)

# --- CMake package: find_package(qbus) gives qbus::client (shared) and
# qbus::client_static.
install(EXPORT qbusTargets NAMESPACE qbus:: FILE qbusTargets.cmake
        DESTINATION ${QBUS_CMAKE_PACKAGE_DIR} COMPONENT devel)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/qbusConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/cmake/qbusConfig.cmake
                              INSTALL_DESTINATION ${QBUS_CMAKE_PACKAGE_DIR})
# The SONAME carries the major version, so the same major is what stays compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/cmake/qbusConfigVersion.cmake
                                 COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cmake/qbusConfig.cmake
              ${PROJECT_BINARY_DIR}/cmake/qbusConfigVersion.cmake
        DESTINATION ${QBUS_CMAKE_PACKAGE_DIR} COMPONENT devel)

# --- pkg-config. qbus.pc names absolute directories, and the prefix is only known at
# install time (`cmake --install --prefix`, CPack), so it is written then.
# `pkg-config --static` adds -pthread: libqbus uses pthread_mutex_* (part of libc since
# glibc 2.34, of libpthread before), and -lstdc++: libqbus is C++ inside, which a C
# program linking libqbus.a must bring; Requires.private brings OpenSSL (tls: addresses).
set(QBUS_PC_LIBS_PRIVATE -pthread -lstdc++)
install(CODE "
  set(QBUS_PC_TEMPLATE \"${CMAKE_CURRENT_LIST_DIR}/qbus.pc.in\")
  set(QBUS_PC_WORKDIR \"${PROJECT_BINARY_DIR}/pkgconfig\")
  set(QBUS_PC_DESTINATION \"${QBUS_PKGCONFIG_DIR}\")
  set(QBUS_PC_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(QBUS_PC_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  set(QBUS_PC_VERSION \"${PROJECT_VERSION}\")
  set(QBUS_PC_LIBS_PRIVATE \"${QBUS_PC_LIBS_PRIVATE}\")
  include(\"${CMAKE_CURRENT_LIST_DIR}/qbusInstallPkgConfig.cmake\")
" COMPONENT devel)
