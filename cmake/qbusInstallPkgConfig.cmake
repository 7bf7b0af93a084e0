# Runs at install time (from install(CODE) in qbusInstall.cmake): writes qbus.pc for the
# prefix this install uses and installs it. file(INSTALL) applies DESTDIR and records the
# file in install_manifest.txt like any other install rule.
#
# In: QBUS_PC_TEMPLATE, QBUS_PC_WORKDIR, QBUS_PC_DESTINATION, QBUS_PC_LIBDIR,
# QBUS_PC_INCLUDEDIR, QBUS_PC_VERSION, QBUS_PC_LIBS_PRIVATE; CMAKE_INSTALL_PREFIX.

string(REGEX REPLACE "(.)/+$" "\\1" QBUS_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")

# Directories under the prefix are written relative to ${prefix} in the .pc.
function(qbus_pc_dir out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "\${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()
qbus_pc_dir(QBUS_PC_LIBDIR_VALUE "${QBUS_PC_LIBDIR}")
qbus_pc_dir(QBUS_PC_INCLUDEDIR_VALUE "${QBUS_PC_INCLUDEDIR}")
if(IS_ABSOLUTE "${QBUS_PC_DESTINATION}")
  set(destination "${QBUS_PC_DESTINATION}")
else()
  set(destination "${QBUS_PC_PREFIX}/${QBUS_PC_DESTINATION}")
endif()

# One work file per prefix, so concurrent installs to different prefixes do not race.
string(MD5 prefix_hash "${QBUS_PC_PREFIX}")
set(generated "${QBUS_PC_WORKDIR}/${prefix_hash}/qbus.pc")
configure_file("${QBUS_PC_TEMPLATE}" "${generated}" @ONLY)
file(INSTALL DESTINATION "${destination}" TYPE FILE FILES "${generated}")
