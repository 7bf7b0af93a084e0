# CPack: `cpack -G DEB` in the build directory makes qbus_<version>-<release>_<arch>.deb.
# The package holds everything `cmake --install` puts (both components) under /usr. Its
# maintainer scripts (cmake/debian/) create the qbus user and the runtime directories and
# enable or start nothing: the operator decides when qbusd runs.

set(QBUS_PACKAGE_MAINTAINER "qbus maintainers <qbus@localhost>" CACHE STRING
    "Maintainer field of the Debian package")
set(QBUS_PACKAGE_RELEASE "1" CACHE STRING "Debian revision of the package")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME qbus)
set(CPACK_PACKAGE_VENDOR qbus)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${QBUS_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "IPC message broker with keyed queues and shared memory")
set(CPACK_PACKAGE_DESCRIPTION
    "qbus is a system-wide IPC message broker for Linux. The daemon qbusd owns keyed \
message queues, routes direct messages by process ID and hands out sealed shared-memory \
regions for bulk payloads. This package holds qbusd, the qbusctl command-line tool, the \
libqbus client library (shared and static), its headers, CMake package and pkg-config \
file, and the systemd units.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_PACKAGE_NAME qbus)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE "${QBUS_PACKAGE_RELEASE}")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${QBUS_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# systemd-sysusers and systemd-tmpfiles set the package up; without them postinst falls
# back to useradd/groupadd (from passwd, which every Debian system has).
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS systemd)
# The Python package (python3-qbus's part, in dist-packages) needs only the stdlib's ctypes.
set(CPACK_DEBIAN_PACKAGE_SUGGESTS python3)

# Depends: computed by dpkg-shlibdeps (package dpkg-dev) when it is there, else the
# libraries qbusd, libqbus, qbusctl (ncurses, for `qbusctl top`) and qbus-bridge (libnats)
# link on Debian 12.
find_program(QBUS_DPKG_SHLIBDEPS dpkg-shlibdeps)
find_program(QBUS_FILE_PROGRAM file)
if(QBUS_DPKG_SHLIBDEPS AND QBUS_FILE_PROGRAM)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  set(CPACK_DEBIAN_PACKAGE_DEPENDS
      "libc6 (>= 2.34), libstdc++6 (>= 12), libgcc-s1, libsystemd0, libspdlog1.10, libfmt9, libssl3, libncursesw6, libtinfo6, libnats3.4")
endif()
# A shlibs file for libqbus.so.0 (and the ldconfig trigger that comes with it).
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")

# Maintainer scripts, configured with the directories this build installs to.
set(QBUS_FULL_SYSUSERSDIR "${CPACK_PACKAGING_INSTALL_PREFIX}/${QBUS_SYSUSERSDIR}")
set(QBUS_FULL_TMPFILESDIR "${CPACK_PACKAGING_INSTALL_PREFIX}/${QBUS_TMPFILESDIR}")
if(IS_ABSOLUTE "${QBUS_SYSUSERSDIR}")
  set(QBUS_FULL_SYSUSERSDIR "${QBUS_SYSUSERSDIR}")
endif()
if(IS_ABSOLUTE "${QBUS_TMPFILESDIR}")
  set(QBUS_FULL_TMPFILESDIR "${QBUS_TMPFILESDIR}")
endif()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA)
foreach(script postinst prerm postrm)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/debian/${script}
                 ${PROJECT_BINARY_DIR}/debian/${script} @ONLY
                 FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
                                  GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  list(APPEND CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PROJECT_BINARY_DIR}/debian/${script})
endforeach()
# CPack adds ldconfig calls only to maintainer scripts it writes itself; ours use the
# trigger instead, as debhelper does.
list(APPEND CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_CURRENT_LIST_DIR}/debian/triggers)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

include(CPack)
